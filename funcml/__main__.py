from funcml.cli import main

main()
