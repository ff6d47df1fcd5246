from turngate.cli import main

raise SystemExit(main())
