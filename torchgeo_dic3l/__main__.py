"""Allow ``python -m torchgeo_dic3l``."""

from .main import main

main()
