package hashing

// murmur3String is MurmurHash3 x86_32 over the bytes of s (the reference
// byte-string algorithm, tail included). It keys Maglev preference lists;
// the packet hash uses the word form, Murmur3Words, which equals this
// function over the words' little-endian bytes.
func murmur3String(seed uint32, s string) uint32 {
	h := seed
	n := len(s)
	i := 0
	for ; i+4 <= n; i += 4 {
		h = MurmurMix(h, uint32(s[i])|uint32(s[i+1])<<8|uint32(s[i+2])<<16|uint32(s[i+3])<<24)
	}
	var k uint32
	switch n - i {
	case 3:
		k ^= uint32(s[i+2]) << 16
		fallthrough
	case 2:
		k ^= uint32(s[i+1]) << 8
		fallthrough
	case 1:
		k ^= uint32(s[i])
		k *= murmurC1
		k = k<<15 | k>>17
		k *= murmurC2
		h ^= k
	}
	return MurmurFinal(h, uint32(n))
}
