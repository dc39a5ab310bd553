"""Market connectors: provider APIs and recorded traces -> PriceObserved / CapacityObserved /
InterruptionObserved on Kafka. Normalised at the edge (one module per provider or dataset)."""
