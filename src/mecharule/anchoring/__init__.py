"""anchoring."""
