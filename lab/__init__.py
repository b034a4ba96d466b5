"""Lab tooling shared by the demo, the tests and the benches: brokers, processes."""
