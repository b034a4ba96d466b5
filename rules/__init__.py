"""Local rules: nearest shops, neighbour alerts and (later) the rule engine."""
