"""The gateway's configuration: the model, the file with line numbers, survey."""
