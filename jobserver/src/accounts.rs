//! Passwords and Airlock login tokens (spec A3).
//!
//! Passwords are argon2id PHC strings. The reference signs researchers in through GitHub; we
//! use local accounts with passwords set by the operator (`rap-jobserver user add`), a
//! deliberate difference recorded in the README.
//!
//! An Airlock login token is three random words (the reference uses the EFF long list; we use
//! our own list of 512 words, so 27 bits; the token is single use, expires after an hour and
//! can only be presented by a caller holding a backend token). It is stored as the sha256 of
//! the words without spaces, as the reference strips spaces on checking.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use subtle::ConstantTimeEq;

use crate::model::{LoginToken, User};
use crate::store::hash_secret;

/// How long a login token stays valid.
pub const LOGIN_TOKEN_LIFETIME_SECS: i64 = 3600;

/// A password we could not hash.
#[derive(Debug, thiserror::Error)]
#[error("hashing the password failed: {0}")]
pub struct HashError(String);

/// The argon2id hash of a password, as a PHC string. Slow by design: call it off the async
/// threads.
///
/// # Errors
/// Only if argon2 rejects its own parameters.
pub fn hash_password(password: &str) -> Result<String, HashError> {
    use rand::RngCore;
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| HashError(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// Whether `password` matches the stored hash (false for an empty or malformed hash). Slow by
/// design: call it off the async threads.
pub fn verify_password(password: &str, stored: &str) -> bool {
    let Ok(hash) = PasswordHash::new(stored) else {
        return false;
    };
    argon2::Argon2::default()
        .verify_password(password.as_bytes(), &hash)
        .is_ok()
}

/// A fresh login token: the words to show once, and what to store.
pub fn new_login_token(now: i64) -> (String, LoginToken) {
    use rand::Rng;
    let mut rng = rand::rng();
    let words: Vec<&str> = (0..3)
        .map(|_| WORDS[rng.random_range(0..WORDS.len())])
        .collect();
    let token = words.join(" ");
    let stored = LoginToken {
        hash: hash_secret(&token.replace(' ', "")),
        expires_at: now + LOGIN_TOKEN_LIFETIME_SECS,
    };
    (token, stored)
}

/// Why a login token was refused (all shown to Airlock as one message, so callers learn
/// nothing about which part was wrong).
#[derive(Debug, PartialEq, Eq)]
pub enum TokenRefusal {
    NoToken,
    Expired,
    Wrong,
}

/// Checks a presented token against the user's stored one at time `now`.
///
/// # Errors
/// Which check failed.
pub fn check_login_token(user: &User, presented: &str, now: i64) -> Result<(), TokenRefusal> {
    let Some(stored) = &user.login_token else {
        return Err(TokenRefusal::NoToken);
    };
    if now >= stored.expires_at {
        return Err(TokenRefusal::Expired);
    }
    let presented: String = presented.chars().filter(|c| !c.is_whitespace()).collect();
    let hash = hash_secret(&presented.to_lowercase());
    if !bool::from(hash.as_bytes().ct_eq(stored.hash.as_bytes())) {
        return Err(TokenRefusal::Wrong);
    }
    Ok(())
}

const WORDS: [&str; 512] = [
    "able",
    "acid",
    "acorn",
    "actor",
    "adobe",
    "agent",
    "agile",
    "alarm",
    "album",
    "alley",
    "alpine",
    "amber",
    "ample",
    "anchor",
    "angle",
    "ankle",
    "apple",
    "apron",
    "arena",
    "armor",
    "arrow",
    "aspen",
    "atlas",
    "attic",
    "audio",
    "avenue",
    "awning",
    "bacon",
    "badge",
    "bagel",
    "baker",
    "balmy",
    "bamboo",
    "banjo",
    "barley",
    "barn",
    "basil",
    "basin",
    "batch",
    "beach",
    "beacon",
    "beagle",
    "beam",
    "bean",
    "beard",
    "beaver",
    "bench",
    "berry",
    "bicycle",
    "bison",
    "blade",
    "blanket",
    "blossom",
    "blues",
    "board",
    "bonus",
    "boot",
    "border",
    "bottle",
    "boulder",
    "bowl",
    "brass",
    "bread",
    "breeze",
    "brick",
    "bridge",
    "brook",
    "brush",
    "bubble",
    "bucket",
    "buffalo",
    "bugle",
    "bundle",
    "burrow",
    "butter",
    "cabin",
    "cable",
    "cactus",
    "camel",
    "camera",
    "candle",
    "canoe",
    "canvas",
    "canyon",
    "carbon",
    "cargo",
    "carpet",
    "carrot",
    "castle",
    "cedar",
    "cello",
    "chalk",
    "charm",
    "cherry",
    "chess",
    "chimney",
    "cider",
    "cinema",
    "circle",
    "citrus",
    "clay",
    "cliff",
    "clock",
    "cloud",
    "clover",
    "coast",
    "cobalt",
    "cocoa",
    "comet",
    "compass",
    "copper",
    "coral",
    "cotton",
    "cougar",
    "cradle",
    "crane",
    "crater",
    "crayon",
    "creek",
    "cricket",
    "crown",
    "crystal",
    "cube",
    "cupboard",
    "curtain",
    "cushion",
    "cycle",
    "daisy",
    "dance",
    "dawn",
    "delta",
    "denim",
    "desert",
    "diary",
    "dinner",
    "docket",
    "dolphin",
    "domino",
    "donkey",
    "dragon",
    "drawer",
    "dream",
    "drift",
    "drum",
    "dune",
    "eagle",
    "easel",
    "echo",
    "eclipse",
    "elbow",
    "elder",
    "ember",
    "emerald",
    "engine",
    "envoy",
    "equator",
    "estate",
    "fabric",
    "falcon",
    "fable",
    "feather",
    "fence",
    "fern",
    "ferry",
    "fiddle",
    "field",
    "fig",
    "finch",
    "fjord",
    "flag",
    "flame",
    "flannel",
    "flint",
    "flute",
    "foam",
    "forest",
    "fossil",
    "fountain",
    "fox",
    "frame",
    "frost",
    "fudge",
    "galaxy",
    "garden",
    "garnet",
    "gazelle",
    "gecko",
    "geyser",
    "ginger",
    "glacier",
    "glove",
    "goblet",
    "goose",
    "gopher",
    "granite",
    "grape",
    "gravel",
    "grove",
    "guitar",
    "gull",
    "habit",
    "hammer",
    "harbor",
    "harp",
    "harvest",
    "hazel",
    "heron",
    "hickory",
    "hill",
    "hive",
    "honey",
    "hoof",
    "horizon",
    "hornet",
    "humble",
    "husky",
    "igloo",
    "indigo",
    "inlet",
    "iris",
    "island",
    "ivory",
    "jacket",
    "jaguar",
    "jasmine",
    "jelly",
    "jewel",
    "jigsaw",
    "journal",
    "juniper",
    "kayak",
    "kernel",
    "kettle",
    "kiosk",
    "kitten",
    "kiwi",
    "knot",
    "koala",
    "ladder",
    "lagoon",
    "lantern",
    "larch",
    "lava",
    "lawn",
    "lemon",
    "lentil",
    "lettuce",
    "lily",
    "linen",
    "lizard",
    "llama",
    "lobster",
    "locket",
    "lodge",
    "lotus",
    "lumber",
    "lunar",
    "lynx",
    "magnet",
    "mango",
    "maple",
    "marble",
    "marsh",
    "meadow",
    "melon",
    "mercury",
    "mesa",
    "metro",
    "mint",
    "mirror",
    "mitten",
    "mocha",
    "monsoon",
    "moose",
    "mosaic",
    "moss",
    "motor",
    "muffin",
    "mural",
    "mustard",
    "napkin",
    "nectar",
    "needle",
    "nest",
    "nickel",
    "noodle",
    "north",
    "nugget",
    "nutmeg",
    "oak",
    "oasis",
    "oatmeal",
    "ocean",
    "octave",
    "olive",
    "onion",
    "opal",
    "orbit",
    "orchard",
    "orchid",
    "otter",
    "oven",
    "owl",
    "oyster",
    "paddle",
    "pagoda",
    "palette",
    "panda",
    "panther",
    "papaya",
    "parade",
    "parcel",
    "parrot",
    "pasta",
    "pastry",
    "peach",
    "pebble",
    "pecan",
    "pelican",
    "pencil",
    "pepper",
    "piano",
    "pickle",
    "pigeon",
    "pillow",
    "pine",
    "pinwheel",
    "pirate",
    "pistachio",
    "planet",
    "plaza",
    "plum",
    "pocket",
    "polar",
    "pony",
    "poppy",
    "porch",
    "potato",
    "prairie",
    "prism",
    "pudding",
    "puffin",
    "pumpkin",
    "puzzle",
    "quail",
    "quarry",
    "quartz",
    "quill",
    "quilt",
    "rabbit",
    "raccoon",
    "radar",
    "radish",
    "raft",
    "rain",
    "raisin",
    "ranch",
    "raven",
    "reef",
    "ribbon",
    "ridge",
    "river",
    "robin",
    "rocket",
    "rose",
    "ruby",
    "saddle",
    "saffron",
    "sage",
    "salmon",
    "sandal",
    "sapphire",
    "satchel",
    "saturn",
    "scarf",
    "school",
    "scooter",
    "seal",
    "season",
    "sequoia",
    "shadow",
    "shell",
    "shelter",
    "shore",
    "sierra",
    "silver",
    "sketch",
    "sled",
    "slope",
    "snail",
    "socket",
    "sonnet",
    "sparrow",
    "spider",
    "spinach",
    "spiral",
    "sponge",
    "spruce",
    "squash",
    "squid",
    "stable",
    "stamp",
    "starling",
    "statue",
    "stone",
    "stork",
    "stream",
    "studio",
    "summit",
    "sunset",
    "swallow",
    "swan",
    "sweater",
    "syrup",
    "table",
    "tablet",
    "tango",
    "tapestry",
    "teapot",
    "temple",
    "tender",
    "thimble",
    "thistle",
    "thunder",
    "tiger",
    "timber",
    "toast",
    "tomato",
    "topaz",
    "torch",
    "tortoise",
    "towel",
    "tower",
    "tractor",
    "trail",
    "tram",
    "trellis",
    "trout",
    "tulip",
    "tundra",
    "turnip",
    "turtle",
    "tuxedo",
    "twig",
    "umbrella",
    "unicorn",
    "valley",
    "vanilla",
    "velvet",
    "violin",
    "voyage",
    "waffle",
    "wagon",
    "walnut",
    "walrus",
    "wander",
    "wasp",
    "water",
    "wave",
    "willow",
    "window",
    "winter",
    "wizard",
    "wombat",
    "wool",
    "wren",
    "yacht",
    "yarn",
    "yodel",
    "yogurt",
    "zebra",
    "zenith",
    "zephyr",
    "zinc",
    "zipper",
    "zodiac",
    "acre",
    "aisle",
    "anvil",
    "arch",
    "autumn",
    "axis",
    "banner",
    "barrel",
    "basket",
    "bell",
    "birch",
    "bolt",
    "bramble",
    "breadth",
    "bronze",
    "cabbage",
    "cape",
    "cashew",
    "cavern",
    "chapel",
    "chord",
    "cinder",
    "clam",
    "cobble",
    "cork",
    "crest",
    "dahlia",
    "dingo",
    "dove",
    "dusk",
    "elm",
    "fennel",
    "flax",
    "galley",
    "gazebo",
    "glade",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn user_with(token: Option<LoginToken>) -> User {
        User {
            username: "alice".into(),
            fullname: "Alice".into(),
            email: "alice@example.org".into(),
            password_hash: String::new(),
            roles: vec![],
            login_token: token,
            date_joined: 0,
        }
    }

    #[test]
    fn passwords_verify_only_when_right() {
        let hash = hash_password("correct horse").unwrap();
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong", &hash));
        assert!(!verify_password("anything", ""));
    }

    #[test]
    fn login_tokens_check_words_and_expiry() {
        let (token, stored) = new_login_token(1000);
        assert_eq!(token.split(' ').count(), 3);
        let user = user_with(Some(stored));
        assert_eq!(check_login_token(&user, &token, 1001), Ok(()));
        assert_eq!(
            check_login_token(&user, &token.replace(' ', ""), 1001),
            Ok(())
        );
        assert_eq!(
            check_login_token(&user, "not the token", 1001),
            Err(TokenRefusal::Wrong)
        );
        assert_eq!(
            check_login_token(&user, &token, 1000 + 3600),
            Err(TokenRefusal::Expired)
        );
        assert_eq!(
            check_login_token(&user_with(None), &token, 1001),
            Err(TokenRefusal::NoToken)
        );
    }

    #[test]
    fn word_list_has_no_duplicates() {
        let mut words = WORDS.to_vec();
        words.sort_unstable();
        words.dedup();
        assert_eq!(words.len(), WORDS.len());
    }
}
