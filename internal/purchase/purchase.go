// Package purchase makes the demo's data: realistic purchases with names, addresses and
// Luhn-valid card numbers, the kind of record that must never sit readable on a broker.
package purchase

import (
	"fmt"
	"math/rand/v2"
)

// Item is one line of a purchase.
type Item struct {
	SKU      string  `json:"sku"`
	Name     string  `json:"name"`
	Quantity int     `json:"quantity"`
	Price    float64 `json:"price"`
}

// Purchase is one order.
type Purchase struct {
	ID         string  `json:"id"`
	Name       string  `json:"name"`
	Address    string  `json:"address"`
	CardNumber string  `json:"card_number"`
	Amount     float64 `json:"amount"`
	Currency   string  `json:"currency"`
	Items      []Item  `json:"items"`
}

var (
	firstNames = []string{"Amelia", "Ravi", "Sofia", "Kenji", "Fatima", "Lucas", "Ingrid", "Mateo", "Zanele", "Chloe", "Oskar", "Priya"}
	lastNames  = []string{"Okafor", "Lindqvist", "Moreau", "Tanaka", "Haddad", "Kowalski", "Silva", "Nguyen", "Brennan", "Dubois", "Mensah", "Ivanova"}
	streets    = []string{"Harbour Road", "Elm Street", "Rue des Lilas", "Kingsway", "Mill Lane", "Calle Mayor", "Birch Avenue", "Station Road"}
	cities     = []string{"Leeds", "Lyon", "Osaka", "Porto", "Gdansk", "Accra", "Uppsala", "Cork"}
	products   = []Item{
		{SKU: "BK-101", Name: "paperback novel", Price: 12.99},
		{SKU: "HD-220", Name: "wireless headphones", Price: 89.00},
		{SKU: "KT-014", Name: "espresso cups (set of 4)", Price: 24.50},
		{SKU: "SP-330", Name: "running shoes", Price: 119.95},
		{SKU: "GD-008", Name: "seed starter kit", Price: 18.75},
		{SKU: "TL-451", Name: "cordless drill", Price: 149.00},
	}
	// Test-range card prefixes of the major schemes.
	binPrefixes = []string{"411111", "555555", "400000", "222300", "378282"}
)

// Generator makes purchases from a seeded source, so a run can be replayed.
type Generator struct {
	rnd *rand.Rand
	n   int
}

// NewGenerator returns a generator seeded with seed.
func NewGenerator(seed uint64) *Generator {
	return &Generator{rnd: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// Next returns the next purchase.
func (g *Generator) Next() Purchase {
	g.n++
	r := g.rnd
	p := Purchase{
		ID:         fmt.Sprintf("ord-%06d", g.n),
		Name:       firstNames[r.IntN(len(firstNames))] + " " + lastNames[r.IntN(len(lastNames))],
		Address:    fmt.Sprintf("%d %s, %s", 1+r.IntN(220), streets[r.IntN(len(streets))], cities[r.IntN(len(cities))]),
		CardNumber: g.cardNumber(),
		Currency:   "EUR",
	}
	for range 1 + r.IntN(3) {
		it := products[r.IntN(len(products))]
		it.Quantity = 1 + r.IntN(3)
		p.Items = append(p.Items, it)
		p.Amount += float64(it.Quantity) * it.Price
	}
	p.Amount = float64(int(p.Amount*100+0.5)) / 100
	return p
}

// cardNumber returns a 16-digit Luhn-valid number formatted in groups of four.
func (g *Generator) cardNumber() string {
	digits := []byte(binPrefixes[g.rnd.IntN(len(binPrefixes))])
	for len(digits) < 15 {
		digits = append(digits, byte('0'+g.rnd.IntN(10)))
	}
	digits = append(digits, LuhnCheckDigit(digits))
	return fmt.Sprintf("%s-%s-%s-%s", digits[0:4], digits[4:8], digits[8:12], digits[12:16])
}

// LuhnCheckDigit returns the check digit that makes digits+check pass the Luhn test.
func LuhnCheckDigit(digits []byte) byte {
	sum := 0
	for i := len(digits) - 1; i >= 0; i-- {
		d := int(digits[i] - '0')
		if (len(digits)-1-i)%2 == 0 {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
	}
	return byte('0' + (10-sum%10)%10)
}

// LuhnValid reports whether a string of digits (separators ignored) passes the Luhn test.
func LuhnValid(s string) bool {
	var digits []byte
	for i := 0; i < len(s); i++ {
		if s[i] >= '0' && s[i] <= '9' {
			digits = append(digits, s[i])
		}
	}
	if len(digits) < 2 {
		return false
	}
	return LuhnCheckDigit(digits[:len(digits)-1]) == digits[len(digits)-1]
}
