"""``python -m mav_train VERB key=value ...``"""

from mav_train.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
