from outcrop.cli import main

main()
