"""One module per step. Each exposes run(ctx) -> trigger name; none imports textual."""
