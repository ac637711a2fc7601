//! The bodies of the wire fuzz test: a reproducible generator, random protobuf-shaped
//! messages, and byte- and field-level mutations of valid encodings.

/// xorshift64*: reproducible from the printed seed, no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound.max(1) as u64) as usize
    }

    pub fn bytes(&mut self, max: usize) -> Vec<u8> {
        let length = self.below(max + 1);
        (0..length).map(|_| self.next() as u8).collect()
    }
}

/// Well-formed protobuf wire data with arbitrary field numbers, wire types and contents
/// (strings that are not UTF-8, varints for strings, lengths past the end).
pub fn random_fields(rng: &mut Rng) -> Vec<u8> {
    let mut body = Vec::new();
    for _ in 0..rng.below(6) {
        let field = 1 + rng.below(12) as u64;
        match rng.below(4) {
            0 => {
                put_varint(&mut body, field << 3);
                put_varint(&mut body, rng.next() >> rng.below(64));
            }
            1 => {
                put_varint(&mut body, (field << 3) | 2);
                let payload = match rng.below(3) {
                    0 => rng.bytes(40),
                    1 => random_fields(rng),
                    _ => {
                        "acme kate HW1 * ! 10.0.0.0/8 totp {}".as_bytes()[..rng.below(34)].to_vec()
                    }
                };
                put_varint(&mut body, payload.len() as u64);
                body.extend(payload);
            }
            2 => {
                put_varint(&mut body, (field << 3) | 5);
                body.extend((rng.next() as u32).to_le_bytes());
            }
            _ => {
                put_varint(&mut body, (field << 3) | 1);
                body.extend(rng.next().to_le_bytes());
            }
        }
    }
    body
}

fn put_varint(body: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        body.push((value as u8) | 0x80);
        value >>= 7;
    }
    body.push(value as u8);
}

/// A valid encoding with one to four byte-level mutations.
pub fn mutate(rng: &mut Rng, valid: &[u8], other: &[u8]) -> Vec<u8> {
    let mut body = valid.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(body.len() + 1);
        match rng.below(7) {
            0 if !body.is_empty() => {
                let at = at.min(body.len() - 1);
                body[at] ^= 1 << rng.below(8);
            }
            1 => body.insert(at, rng.next() as u8),
            2 if at < body.len() => {
                body.remove(at);
            }
            3 if at < body.len() => body[at] = [0x00, 0x7f, 0x80, 0xff][rng.below(4)],
            4 => body.truncate(at),
            // A field of another request spliced in.
            5 => {
                let from = rng.below(other.len() + 1);
                let to = from + rng.below(other.len() - from + 1);
                body.splice(at..at, other[from..to].iter().copied());
            }
            _ => {
                body.splice(at..at, random_fields(rng));
            }
        }
    }
    body
}

/// Values that have tripped parsers before: empty, whitespace, NUL, huge, non-ASCII case
/// traps, pattern and CIDR syntax, numbers past every limit.
const INTERESTING: &[&str] = &[
    "",
    " ",
    "\0",
    "a\0b",
    "*",
    "!",
    "!*",
    ",",
    "é",
    "\u{212a}",
    "ß",
    "\u{202e}x",
    "😀",
    "-1",
    "0",
    "4294967296",
    "99999999999999999999999",
    "NaN",
    "../../etc/passwd",
    "%s%n",
    "' OR 1=1 --",
    "10.0.0.0/33",
    "::ffff:10.0.0.1",
    "1.2.3.4/",
    "zz",
    "ffff",
    "base32:",
    "{\"id\":1}",
    "[]",
    "null",
    "<u>@<r>",
    "<x>",
    "totp,hotp,webauthn,password",
    "cCns",
    "enrollment",
    "6f1c1a52-7a8e-4a43-8d8a-8a9b7f3f0c11",
    "HW1",
    "acme",
    "kate",
];

/// One field of a message as it is on the wire.
enum Field {
    Varint(u64, u64),
    Bytes(u64, Vec<u8>),
    Fixed(u64, u32, Vec<u8>),
}

/// Splits a valid encoding into its top-level fields (`None` when it is not protobuf).
fn fields(mut body: &[u8]) -> Option<Vec<Field>> {
    fn varint(body: &mut &[u8]) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = body.split_first()?;
            *body = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Some(value);
            }
        }
        None
    }
    let mut out = Vec::new();
    while !body.is_empty() {
        let key = varint(&mut body)?;
        let (number, wire) = (key >> 3, (key & 7) as u32);
        out.push(match wire {
            0 => Field::Varint(number, varint(&mut body)?),
            2 => {
                let length = usize::try_from(varint(&mut body)?).ok()?;
                let payload = body.get(..length)?.to_vec();
                body = &body[length..];
                Field::Bytes(number, payload)
            }
            1 | 5 => {
                let length = if wire == 1 { 8 } else { 4 };
                let payload = body.get(..length)?.to_vec();
                body = &body[length..];
                Field::Fixed(number, wire, payload)
            }
            _ => return None,
        });
    }
    Some(out)
}

fn encode_fields(fields: &[Field]) -> Vec<u8> {
    let mut body = Vec::new();
    for field in fields {
        match field {
            Field::Varint(number, value) => {
                put_varint(&mut body, number << 3);
                put_varint(&mut body, *value);
            }
            Field::Bytes(number, payload) => {
                put_varint(&mut body, (number << 3) | 2);
                put_varint(&mut body, payload.len() as u64);
                body.extend(payload);
            }
            Field::Fixed(number, wire, payload) => {
                put_varint(&mut body, (number << 3) | u64::from(*wire));
                body.extend(payload);
            }
        }
    }
    body
}

/// A valid encoding with its field values replaced, dropped or repeated: still protobuf,
/// so the body reaches the handler and its validation.
pub fn mutate_fields(rng: &mut Rng, valid: &[u8]) -> Vec<u8> {
    let Some(mut fields) = fields(valid) else {
        return valid.to_vec();
    };
    for _ in 0..1 + rng.below(3) {
        if fields.is_empty() {
            break;
        }
        let at = rng.below(fields.len());
        match rng.below(6) {
            0 => {
                fields.remove(at);
            }
            1 => {
                let copy = match &fields[at] {
                    Field::Varint(number, value) => Field::Varint(*number, *value),
                    Field::Bytes(number, payload) => Field::Bytes(*number, payload.clone()),
                    Field::Fixed(number, wire, payload) => {
                        Field::Fixed(*number, *wire, payload.clone())
                    }
                };
                fields.push(copy);
            }
            _ => match &mut fields[at] {
                Field::Varint(_, value) => {
                    *value = [0, 1, 2, 3, 7, 99, u64::from(u32::MAX), u64::MAX, rng.next()]
                        [rng.below(9)];
                }
                Field::Bytes(_, payload) => {
                    *payload = match rng.below(4) {
                        0 => "x".repeat(1 + rng.below(5000)).into_bytes(),
                        1 => {
                            let nested = std::mem::take(payload);
                            mutate_fields(rng, &nested)
                        }
                        _ => INTERESTING[rng.below(INTERESTING.len())]
                            .as_bytes()
                            .to_vec(),
                    };
                }
                Field::Fixed(_, _, payload) => {
                    for byte in payload.iter_mut() {
                        *byte = rng.next() as u8;
                    }
                }
            },
        }
    }
    encode_fields(&fields)
}
