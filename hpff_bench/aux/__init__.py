"""Auxiliary nets (heads, decoder), local losses, and PFF patching."""
