"""Alembic migrations of the tunelab database, shipped inside the package.

``env.py`` runs them on the connection that ``tunelab.db.database`` hands over in
``config.attributes["connection"]``: no ``alembic.ini`` is needed. Revision files live in
``versions/`` (a folder without ``__init__.py``: Alembic reads every ``.py`` file there as
a revision). To write the next one, compare the tables with a migrated database::

    from alembic import command
    from tunelab.db.database import alembic_config, open_database

    db = open_database("sqlite:////tmp/scratch.db")
    with db.engine.begin() as conn:
        command.revision(alembic_config(conn), "what changes", autogenerate=True,
                         rev_id="0002")

then read the generated file and keep its upgrade and downgrade plain (no imports of
tunelab: a revision is frozen in time, the tables module is not).
"""
