"""The `mvcf` command line: one module per command under mvcf.cli, dispatched by mvcf.cli.main."""
