"""The pure domain core: no I/O, no wall clock, synchronous and typed."""
