"""Wire formats: each parses its request syntax into a Query and encodes data to bytes."""
