"""One adapter per control: a Synapse call in, a policy decision, an answer out."""
