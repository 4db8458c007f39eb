package worker

import "time"

// maxRememberedCancels bounds the cancel events remembered for requests
// that are not running here (yet).
const maxRememberedCancels = 65536

// cancelSet remembers cancel events of requests this worker is not running,
// so a request still queued in the group when its cancel arrived is never
// run. Entries expire after ttl; the set is bounded. Its owner (Worker)
// guards it with its mutex.
type cancelSet struct {
	ttl   time.Duration
	ids   map[string]time.Time
	order []string // insertion order, for expiry and the bound
}

func newCancelSet(ttl time.Duration) *cancelSet {
	return &cancelSet{ttl: ttl, ids: map[string]time.Time{}}
}

// add remembers id as cancelled at now.
func (s *cancelSet) add(id string, now time.Time) {
	if _, ok := s.ids[id]; ok {
		return
	}
	s.expire(now)
	for len(s.ids) >= maxRememberedCancels {
		s.drop(1)
	}
	if len(s.order) >= 2*maxRememberedCancels { // mostly taken entries: compact
		live := s.order[:0:0]
		for _, k := range s.order {
			if _, ok := s.ids[k]; ok {
				live = append(live, k)
			}
		}
		s.order = live
	}
	s.ids[id] = now
	s.order = append(s.order, id)
}

// take reports whether id was cancelled (and forgets it).
func (s *cancelSet) take(id string, now time.Time) bool {
	at, ok := s.ids[id]
	if !ok {
		return false
	}
	delete(s.ids, id)
	return now.Sub(at) <= s.ttl
}

// expire forgets entries older than ttl.
func (s *cancelSet) expire(now time.Time) {
	n := 0
	for n < len(s.order) {
		at, ok := s.ids[s.order[n]]
		if ok && now.Sub(at) <= s.ttl {
			break
		}
		n++
	}
	s.drop(n)
}

// drop forgets the n oldest entries (and order slots of taken ones).
func (s *cancelSet) drop(n int) {
	for _, id := range s.order[:n] {
		delete(s.ids, id)
	}
	s.order = s.order[n:]
}
