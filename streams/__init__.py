"""The worker: validate market events, keep per-offer state and forecasts, trigger coalesced re-solves
through an injected AllocationEngine, emit AllocationDecided.

- `streams.core`: the logic as plain functions and classes, testable without Kafka (validate, state,
  windows, forecast, risk, track, decide, decider with an injected clock, held); no Kafka client, Faust,
  asyncio, threads or processes (an import-linter contract).
- `streams.runtime`: the same logic run on Kafka: the market stage's consumer thread (`market`), the Faust
  decision stage (`app`, `rebalance`), the state stores (`store`), the decider's child process (`remote`), the
  producer (`fastout`), the plans follower (`held`) and the metrics collectors (`metrics`)."""
