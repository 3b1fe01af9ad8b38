from chaincomp.cli import main

raise SystemExit(main())
