from wincaffe.cli import main

raise SystemExit(main())
