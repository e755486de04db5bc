"""The asyncio runtime around the pure core: `Node`, clocks, the state machine protocol."""
