"""Subcommands of the `tallformer` CLI; see `tallformer.cli`."""
