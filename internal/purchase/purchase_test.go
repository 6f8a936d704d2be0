package purchase

import "testing"

func TestCardNumbersAreLuhnValid(t *testing.T) {
	g := NewGenerator(1)
	for range 1000 {
		p := g.Next()
		if !LuhnValid(p.CardNumber) || len(p.CardNumber) != 19 {
			t.Fatalf("card %q is not a valid 16-digit number", p.CardNumber)
		}
		if p.Name == "" || p.Address == "" || len(p.Items) == 0 || p.Amount <= 0 {
			t.Fatalf("incomplete purchase %+v", p)
		}
	}
}

func TestLuhn(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"4111 1111 1111 1111", true},
		{"4111 1111 1111 1112", false},
		{"79927398713", true},
		{"1", false},
	} {
		if got := LuhnValid(tc.in); got != tc.want {
			t.Errorf("LuhnValid(%q) = %t", tc.in, got)
		}
	}
}

func TestSeededRunsRepeat(t *testing.T) {
	a, b := NewGenerator(7), NewGenerator(7)
	for range 10 {
		if a.Next().CardNumber != b.Next().CardNumber {
			t.Fatal("same seed, different purchases")
		}
	}
}
