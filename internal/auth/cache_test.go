package auth

import (
	"errors"
	"testing"
	"time"
)

func TestVerifiedTokenCacheHonoursExpiry(t *testing.T) {
	key := []byte("k")
	now := time.Now()
	tok, err := Issue(key, Claims{Subject: "s", Audience: []string{Audience}, IssuedAt: now, ExpiresAt: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	v := NewVerifier(key, Audience)
	c1, err := v.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := v.Verify(tok)
	if err != nil || c2 != c1 {
		t.Fatalf("second verify: %v (cached claims reused: %v)", err, c2 == c1)
	}
	v.now = func() time.Time { return now.Add(2 * time.Hour) }
	if _, err := v.Verify(tok); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("expired cached token: %v", err)
	}
	other := NewVerifier([]byte("other key"), Audience)
	if _, err := other.Verify(tok); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("a token verified by one verifier passed another: %v", err)
	}
}
