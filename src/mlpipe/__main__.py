from mlpipe.cli import main

main()
