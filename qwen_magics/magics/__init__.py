"""The magics: each class parses its options and wires a runner to a renderer; no work of their own."""
