"""The streaming core (Faust): validate market events, keep per-offer state, trigger coalesced
re-solves through an injected AllocationEngine, emit AllocationDecided. Logic lives in plain modules
(validate, state, decide); `streams.app` only wires them into agents and tables."""
