module github.com/discluster/discluster/bench/peers

go 1.26.8

require (
	github.com/bwmarrin/discordgo v0.28.1
	github.com/coder/websocket v1.8.15
	github.com/diamondburned/arikawa/v3 v3.5.0
	github.com/discluster/discluster v0.0.0
	github.com/disgoorg/disgo v0.18.15
	github.com/klauspost/compress v1.20.3
)

require (
	github.com/disgoorg/json v1.2.0 // indirect
	github.com/disgoorg/snowflake/v2 v2.0.3 // indirect
	github.com/gorilla/schema v1.4.1 // indirect
	github.com/gorilla/websocket v1.5.3 // indirect
	github.com/sasha-s/go-csync v0.0.0-20240107134140-fcbab37b09ad // indirect
	golang.org/x/crypto v0.57.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
	golang.org/x/time v0.10.0 // indirect
)

replace github.com/discluster/discluster => ../..
