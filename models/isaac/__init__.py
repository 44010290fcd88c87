"""The Isaac item recognizer: name an item from a photo of the screen, or find every item in one.

Plain torch (torchvision does not install beside the project's CPU torch). The modules:

* ``icons``: the classes, the 907 labelled sprites keyed by (kind, in-game id), from the
  catalogue's ``sprites`` table or sliced afresh from the captured wiki files;
* ``synthesis``: camera-like crops and scenes made on the fly, deterministic from a seed, with
  backgrounds split so validation and test never see a training one;
* ``net``: the compact CNN; ``train``: training with exact resume; ``evaluate``: the held-out
  measurements; ``identify``: names for crops; ``locate``: boxes and names in whole pictures.

``scrapy isaac …`` (crawler/commands/isaac.py) is the command line over these.
"""
