from pghad.cli import main

raise SystemExit(main())
