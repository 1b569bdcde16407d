"""Runner tasks. Each is a plain function `(cfg, ctx) -> TaskResult`, looked up by `task`."""
