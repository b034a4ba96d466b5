"""The alarm receiving centre: a second application beside the gateway."""
