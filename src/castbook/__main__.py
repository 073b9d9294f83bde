from castbook.cli.app import main

main()
