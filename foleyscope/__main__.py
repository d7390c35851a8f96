from foleyscope.cli import main

raise SystemExit(main())
