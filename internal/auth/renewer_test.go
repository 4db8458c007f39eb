package auth

import (
	"testing"
	"time"
)

func TestRenewerRenewsBeforeExpiry(t *testing.T) {
	key := []byte("renewer-test-key")
	r := NewRenewer(key, "svc", []string{"llm:proxy"}, time.Hour)
	now := time.Unix(1_800_000_000, 0)
	r.now = func() time.Time { return now }
	first, err := r.Token()
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(30 * time.Minute)
	if tok, _ := r.Token(); tok != first {
		t.Fatal("renewed with two thirds of the lifetime left")
	}
	now = now.Add(11 * time.Minute) // 41 minutes in: less than a third left
	second, err := r.Token()
	if err != nil || second == first {
		t.Fatalf("not renewed 41 minutes into a one-hour token (%v)", err)
	}
	v := NewVerifier(key, Audience)
	v.now = func() time.Time { return now.Add(50 * time.Minute) } // the first one has expired
	if _, err := v.Verify(first); err == nil {
		t.Fatal("the first token should have expired")
	}
	c, err := v.Verify(second)
	if err != nil || c.Subject != "svc" || !c.HasScope("llm:proxy") {
		t.Fatalf("renewed token: %+v, %v", c, err)
	}
}
