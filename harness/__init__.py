"""A real Synapse with the guard, for the tests, the demo and the benchmark."""
