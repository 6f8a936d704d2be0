module github.com/pubcrypt/pubcrypt/testdata/fpe/compare

go 1.26.0

require (
	github.com/capitalone/fpe v1.2.1
	github.com/pubcrypt/pubcrypt v0.0.0
)

replace github.com/pubcrypt/pubcrypt => ../../..
