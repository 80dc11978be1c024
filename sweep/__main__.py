import sys

if sys.argv[1:2] == ["cache"]:  # `python -m sweep cache list|prune`: light, no experiment file, no Ray
    from sweep.cache_command import main as cache_main

    sys.exit(cache_main(sys.argv[2:]))

from sweep.cli import main

sys.exit(main())
