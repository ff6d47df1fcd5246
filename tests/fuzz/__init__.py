"""The gateway fuzz: generated requests and frames against a real gateway (issue 9)."""
