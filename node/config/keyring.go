package config

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
)

// ErrKeyring is returned when the keyring file cannot be used.
var ErrKeyring = errors.New("bad keyring")

// KeySize is the size of a gossip key: AES-256.
const KeySize = 32

// LoadKeyring reads a keyring file: one base64 32-byte key a line, the first
// being the primary key; blank lines and lines starting with # are ignored.
func LoadKeyring(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading keyring: %w", err)
	}
	keys, err := ParseKeyring(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return keys, nil
}

// ParseKeyring parses the contents of a keyring file.
func ParseKeyring(b []byte) ([][]byte, error) {
	var keys [][]byte
	sc := bufio.NewScanner(bytes.NewReader(b))
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		k, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("line %d: not base64 (make one with `openssl rand -base64 32`): %w", line, ErrKeyring)
		}
		if len(k) != KeySize {
			return nil, fmt.Errorf("line %d: key is %d bytes, want %d (`openssl rand -base64 32`): %w", line, len(k), KeySize, ErrKeyring)
		}
		keys = append(keys, k)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("scanning keyring: %w", err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("no key found (one base64 32-byte key a line): %w", ErrKeyring)
	}
	return keys, nil
}
