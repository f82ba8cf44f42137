"""One module per stage. Each has pure table functions and a `run(...)` that reads and writes stage directories."""
