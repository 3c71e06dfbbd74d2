"""Sizing replicas for a cluster scheduler from their plans, and simulating a cluster of saved profiles."""
