//! Base64 for the few places the simulator needs it (HTTP Basic auth, JWT
//! segments, PKCE challenges), without another dependency.

const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn encode(data: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..4 {
            if i < chars {
                let idx = usize::try_from((n >> (18 - 6 * i)) & 63).unwrap_or(0);
                out.push(char::from(alphabet[idx]));
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// Standard alphabet, padded.
#[cfg(test)]
pub(crate) fn encode_std(data: &[u8]) -> String {
    encode(data, STD, true)
}

/// URL-safe alphabet, unpadded (JWT, PKCE).
pub(crate) fn encode_url_nopad(data: &[u8]) -> String {
    encode(data, URL, false)
}

fn decode(text: &str, alphabet: &[u8; 64]) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in text.bytes() {
        let v = alphabet.iter().position(|&a| a == c)?;
        acc = (acc << 6) | u32::try_from(v).ok()?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).ok()?);
        }
    }
    // Leftover bits must be padding zeros from a whole number of bytes.
    if bits >= 6 {
        return None;
    }
    Some(out)
}

/// Decodes the standard alphabet (padding optional).
pub(crate) fn decode_std(text: &str) -> Option<Vec<u8>> {
    decode(text, STD)
}

/// Decodes the URL-safe alphabet (padding optional).
pub(crate) fn decode_url(text: &str) -> Option<Vec<u8>> {
    decode(text, URL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, enc) in cases {
            assert_eq!(encode_std(plain.as_bytes()), enc);
            assert_eq!(decode_std(enc), Some(plain.as_bytes().to_vec()));
            assert_eq!(
                encode_url_nopad(plain.as_bytes()),
                enc.trim_end_matches('=')
            );
        }
        assert_eq!(decode_std("Zm9v!"), None);
        assert_eq!(decode_url("_-8"), Some(vec![0xff, 0xef]));
    }
}
