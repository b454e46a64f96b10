"""models/llada."""
