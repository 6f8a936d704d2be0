package main

import _ "github.com/pubcrypt/pubcrypt/internal/broker/drivers" // every broker by URL
