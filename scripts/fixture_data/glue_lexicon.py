"""Word lists of the GLUE templates: label-deciding words (sentiment, agreement, slots) and fillers."""

MOVIE_NOUNS = [
    "film",
    "movie",
    "story",
    "plot",
    "script",
    "soundtrack",
    "ending",
    "cast",
    "dialogue",
    "opening scene",
    "lead actor",
    "camera work",
    "pacing",
    "finale",
]
POS_ADJ = [
    "wonderful",
    "brilliant",
    "charming",
    "delightful",
    "moving",
    "clever",
    "superb",
    "gripping",
    "warm",
    "funny",
    "beautiful",
    "fresh",
    "touching",
    "inventive",
]
NEG_ADJ = [
    "dull",
    "tedious",
    "clumsy",
    "boring",
    "awful",
    "bland",
    "messy",
    "shallow",
    "tiresome",
    "weak",
    "lifeless",
    "predictable",
    "sloppy",
    "painful",
]
INTENS = ["", "very ", "truly ", "rather ", "quite ", "remarkably ", "utterly "]

SING_SUBJ = [
    "the dog",
    "the teacher",
    "my sister",
    "the old man",
    "a child",
    "the farmer",
    "the pilot",
    "our neighbour",
    "the baker",
    "the student",
]
PLUR_SUBJ = [
    "the dogs",
    "the teachers",
    "my sisters",
    "the old men",
    "the children",
    "the farmers",
    "the pilots",
    "our neighbours",
    "the bakers",
    "the students",
]
VERBS = [
    ("chases", "chase"),
    ("reads", "read"),
    ("paints", "paint"),
    ("carries", "carry"),
    ("finds", "find"),
    ("likes", "like"),
    ("cleans", "clean"),
    ("sells", "sell"),
]
OBJECTS = [
    "the ball",
    "a letter",
    "the fence",
    "a basket",
    "the red box",
    "the book",
    "an apple",
    "the kite",
    "the boat",
    "a map",
]

COMPANIES = [
    "Norvell Systems",
    "Brightwater Foods",
    "Caldera Motors",
    "Pellham Bank",
    "Ostrava Energy",
    "Kinsley Media",
    "Marlowe Telecom",
    "Tavish Airlines",
]
METRICS = ["profit", "revenue", "sales", "net income", "operating profit", "turnover"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
QUARTERS = ["first quarter", "second quarter", "third quarter", "fourth quarter"]

HOWTO = [
    ("learn", "new language"),
    ("fix", "broken bicycle"),
    ("cook", "simple curry"),
    ("train", "young puppy"),
    ("grow", "tomato plant"),
    ("clean", "leather jacket"),
    ("build", "wooden shelf"),
    ("write", "short story"),
    ("start", "small garden"),
    ("repair", "leaking tap"),
    ("plan", "cheap holiday"),
    ("paint", "kitchen wall"),
]

PEOPLE = ["a man", "a woman", "a boy", "a girl", "a chef", "a musician", "a dancer", "a player"]
ACTIONS = ["playing", "slicing", "carrying", "throwing", "holding", "washing", "kicking", "opening"]
STS_OBJECTS = ["guitar", "tomato", "suitcase", "ball", "flute", "window", "cake", "drum"]

NAMES = ["Anna", "Tomas", "Lena", "Marco", "Priya", "Jonas", "Elif", "Kofi", "Sara", "Ivan", "Mira", "Diego"]
MNLI_MATCHED = {
    "objects": ["the lamp", "the ticket", "the guidebook", "the map", "the camera", "the umbrella"],
    "places": ["the hotel", "the station", "the museum", "the harbour", "the market", "the castle"],
    "verbs": [("left", "leave"), ("found", "find"), ("bought", "buy"), ("lost", "lose")],
}
MNLI_MISMATCHED = {
    "objects": ["the report", "the contract", "the invoice", "the laptop", "the badge", "the memo"],
    "places": ["the office", "the archive", "the lab", "the warehouse", "the clinic", "the court"],
    "verbs": [("signed", "sign"), ("checked", "check"), ("filed", "file"), ("printed", "print")],
}
NEUTRAL_TAILS = [
    "because it was raining",
    "before lunch",
    "with a friend",
    "for the second time",
    "without telling anyone",
    "late in the evening",
]

ANIMALS = {
    "otter": ("rivers and lakes", "fish and crabs"),
    "camel": ("hot deserts", "dry plants"),
    "puffin": ("rocky sea cliffs", "small fish"),
    "koala": ("eucalyptus forests", "eucalyptus leaves"),
    "badger": ("woodland burrows", "earthworms"),
    "penguin": ("the cold south", "krill and fish"),
    "lynx": ("northern forests", "hares"),
    "tapir": ("tropical rainforests", "fruit and leaves"),
    "walrus": ("arctic coasts", "clams"),
    "beaver": ("streams and ponds", "tree bark"),
}

ORGS = [
    "the city council",
    "the national library",
    "the river trust",
    "the football club",
    "the science museum",
    "the farmers union",
    "the theatre company",
    "the rail operator",
]
ROLES = ["director", "chairman", "treasurer", "spokesperson", "founder", "head coach"]
ANNOUNCEMENTS = [
    "a new budget",
    "a merger",
    "a summer programme",
    "a hiring freeze",
    "a public inquiry",
    "a new logo",
]
