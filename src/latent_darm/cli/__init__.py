"""The `darm` command line: one module per command; heavy libraries load inside the commands so `darm --help`
answers at once."""
