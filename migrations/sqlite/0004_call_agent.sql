-- Which agent took each call (README "Agents per number"): `default`, or the name
-- of an agent file in AGENTS_DIR. Older rows have none.
ALTER TABLE calls ADD COLUMN agent TEXT;
