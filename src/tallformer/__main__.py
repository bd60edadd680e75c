"""`python -m tallformer` is the same as the `tallformer` command."""

from tallformer.cli import main

raise SystemExit(main())
