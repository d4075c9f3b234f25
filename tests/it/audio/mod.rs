//! Pure audio code (`src/audio`) checked against `sox`.

mod sox;
