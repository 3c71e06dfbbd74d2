"""voxfit tune: every feasible proposal measured here, round robin against the current choice."""
