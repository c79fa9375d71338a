//! SHA-224 and base36: upstream's inputs-hash and name-hash formulas.
//!
//! ring has no SHA-224, and upstream's hashes (kept in existing Secrets' annotations and names) must
//! be reproduced bit for bit, so the digest is written out here (FIPS 180-4 §6.3).

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// SHA-224 initial hash values (they differ from SHA-256's; the rounds are the same).
const H0: [u32; 8] = [
    0xc1059ed8, 0x367cd507, 0x3070dd17, 0xf70e5939, 0xffc00b31, 0x68581511, 0x64f98fa7, 0xbefa4fa4,
];

/// The SHA-224 digest of `data`.
pub fn sha224(data: &[u8]) -> [u8; 28] {
    let mut h = H0;
    let bit_len = (data.len() as u64).wrapping_mul(8);
    let mut tail = Vec::with_capacity(128);
    let full = data.len() / 64 * 64;
    tail.extend_from_slice(&data[full..]);
    tail.push(0x80);
    while tail.len() % 64 != 56 {
        tail.push(0);
    }
    tail.extend_from_slice(&bit_len.to_be_bytes());
    for block in data[..full].chunks_exact(64).chain(tail.chunks_exact(64)) {
        compress(&mut h, block);
    }
    let mut out = [0u8; 28];
    for (chunk, word) in out.chunks_exact_mut(4).zip(h.iter()) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

fn compress(h: &mut [u32; 8], block: &[u8]) {
    let mut w = [0u32; 64];
    for (i, word) in block.chunks_exact(4).enumerate() {
        w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
    }
    for i in 16..64 {
        let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
        let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16]
            .wrapping_add(s0)
            .wrapping_add(w[i - 7])
            .wrapping_add(s1);
    }
    let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = *h;
    for i in 0..64 {
        let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
        let ch = (e & f) ^ (!e & g);
        let t1 = hh
            .wrapping_add(s1)
            .wrapping_add(ch)
            .wrapping_add(K[i])
            .wrapping_add(w[i]);
        let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
        let maj = (a & b) ^ (a & c) ^ (b & c);
        let t2 = s0.wrapping_add(maj);
        hh = g;
        g = f;
        f = e;
        e = d.wrapping_add(t1);
        d = c;
        c = b;
        b = a;
        a = t1.wrapping_add(t2);
    }
    for (slot, v) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
        *slot = slot.wrapping_add(v);
    }
}

/// `bytes` read as one big-endian unsigned integer, written in lowercase base 36 without padding
/// (Go's `big.Int.Text(36)`): `"0"` for zero.
pub fn base36(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut num: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
    let mut out = Vec::new();
    // Schoolbook long division by 36; inputs are digests (28 bytes), so quadratic is fine.
    while !num.is_empty() {
        let mut rem: u32 = 0;
        let mut quotient = Vec::with_capacity(num.len());
        for byte in &num {
            let acc = (rem << 8) | u32::from(*byte);
            let q = acc / 36;
            rem = acc % 36;
            if !(quotient.is_empty() && q == 0) {
                quotient.push(q as u8);
            }
        }
        out.push(DIGITS[rem as usize]);
        num = quotient;
    }
    if out.is_empty() {
        return "0".to_string();
    }
    out.reverse();
    out.into_iter().map(char::from).collect()
}

/// Upstream's hash of a string: `base36(sha224(s))`.
pub fn inputs_hash(s: &str) -> String {
    base36(&sha224(s.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn sha224_of_abc_matches_fips_vector() {
        assert_eq!(
            hex(&sha224(b"abc")),
            "23097d223405d8228642a477bda255b32aadbce4bda0b3f7e36c9da7"
        );
    }

    #[test]
    fn sha224_of_empty_matches_fips_vector() {
        assert_eq!(
            hex(&sha224(b"")),
            "d14a028c2a3a2bc9476102bb288234c415a2b01f828ea62ac5b3e42f"
        );
    }

    #[test]
    fn sha224_of_two_block_message_matches_fips_vector() {
        assert_eq!(
            hex(&sha224(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "75388b16512776cc5dba5da1fd890150b0c6455cb4f58b1952522525"
        );
    }

    #[test]
    fn sha224_of_a_million_a_matches_fips_vector() {
        let data = vec![b'a'; 1_000_000];
        assert_eq!(
            hex(&sha224(&data)),
            "20794655980c91d8bbb4c1ea97618a4bf03f42581948b2ee4ee7ad67"
        );
    }

    #[test]
    fn base36_writes_zero_and_small_numbers_like_go() {
        assert_eq!(base36(&[]), "0");
        assert_eq!(base36(&[0, 0]), "0");
        assert_eq!(base36(&[35]), "z");
        assert_eq!(base36(&[36]), "10");
        assert_eq!(base36(&[0, 1, 0]), "74");
    }

    #[test]
    fn inputs_hash_matches_every_upstream_vector() {
        let vectors = [
            ("defaultResourceIDDefaultACRServer", "2wucoufm4eqegr6z5nmg00bvmwguubf86kfxk6yir9pw"),
            (
                "defaultResourceIDDefaultACRServerrepository:testing:pull,push",
                "22xcczzccamzxpnpzuzes776qx9hc0r97keomc9lwybt",
            ),
            ("whatever/identitysomewhere.else.biz", "1heyo3x93ljuxr5x2cwq6i068hxgwnsiyzjfzpb3gai8"),
            (
                "Client-identitydefaultResourceIDsomewhere.else.biz",
                "2e134ajxrn0xllpwotsvet3felcqjnipmkd29wx8gvu5",
            ),
            (
                "defaultResourceIDsomewhere.else.bizrepository:alice:pull",
                "e7zbhluhoceu823bs5pmdzhukvcbtj6khxsglgos92r",
            ),
            ("defaultResourceIDsomewhere.else.biz", "1zgwms3qm24vy8nn9xaxnmio6ux9exubtj2uged0qbjp"),
            (
                "delegatemanagedIdentityresourcePublicCloudregistry.azurecr.iorepository:testing:pull,push",
                "2goxvjvcjze0v96ooojjo7okj10q3qo5rtq9tgckauh",
            ),
            (
                "delegatemanagedIdentityclient-idPublicCloudregistry.azurecr.iorepository:testing:pull,push",
                "bznn8knczhrdktghbm88h4ock013v94i8e8cslwlrob",
            ),
            (
                "delegateworkloadIdentitydelegatePublicCloudregistry.azurecr.iorepository:testing:pull,push",
                "zrlombgy4mz11lkl9yxxi5n5sibq3cknbiekmkf7aju",
            ),
        ];
        for (input, want) in vectors {
            assert_eq!(inputs_hash(input), want, "input {input}");
        }
    }
}
