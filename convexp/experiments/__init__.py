"""One module per subcommand: each has `Config` (its config class) and `run(config, run, device, reporter)`."""
